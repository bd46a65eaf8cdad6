"""The miniature course's tests: each marked by its chapter and its exercise."""

import numpy as np
import pytest

from kitpkg import Doubler, row_sums, softsign
from kitpkg import kernels


@pytest.mark.layers
@pytest.mark.ex_layers_1
def test_softsign_of_three_is_three_quarters():
    assert softsign(np.array([3.0]))[0] == 0.75


@pytest.mark.layers
@pytest.mark.ex_layers_1
def test_softsign_is_odd():
    assert softsign(np.array([-1.0]))[0] == -0.5


@pytest.mark.layers
@pytest.mark.ex_layers_2
def test_doubler_backward_doubles_the_gradient():
    assert Doubler().backward(np.array([1.5, -2.0])).tolist() == [3.0, -4.0]


@pytest.mark.kernels
@pytest.mark.ex_kernels_1
def test_row_sums_of_a_two_by_three():
    assert row_sums(np.arange(6.0).reshape(2, 3)).tolist() == [3.0, 12.0]


@pytest.mark.kernels
@pytest.mark.ex_kernels_1
def test_the_plain_kernel_agrees_with_the_compiled_one():
    x = np.arange(12.0).reshape(3, 4)
    plain, compiled = np.empty(3), np.empty(3)
    kernels._row_sums(x, plain)
    kernels.row_sums(x, compiled)
    assert plain.tolist() == compiled.tolist() == [6.0, 22.0, 38.0]


@pytest.mark.layers
def test_doubler_forward_is_not_an_exercise():
    assert Doubler().forward(np.array([2.0])).tolist() == [4.0]
