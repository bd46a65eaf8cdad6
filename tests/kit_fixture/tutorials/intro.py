# %% [markdown]
# # Softsign
#
# A smooth step from -1 to 1: write `kitpkg.softsign` (exercise layers.1),
# then run this cell.

# %%
import numpy as np

from kitpkg import softsign

print(softsign(np.array([-3.0, 0.0, 3.0])))
