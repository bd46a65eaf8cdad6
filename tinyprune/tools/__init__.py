"""The programs around the library, out of the textbook's path.

* ``cli``: the ``tinyprune`` command (``count``, ``prune``, ``evaluate``, and
  the two tools below as subcommands);
* ``main_job``: what the command does with no subcommand, the tutorial's
  pipeline from checkpoint to figures, its checks apart from its run;
* ``args``: the one set of argument and file checks the three programs
  share, and the rule that every failure is one line and exit code 2;
* ``bench``: ``tinyprune bench``, the speed and memory benchmark, and
  ``bench_inference``, its part setting the fused fast path, the plain
  layers and ONNX Runtime side by side;
* ``pretrain``: ``tinyprune pretrain``, which trains the shipped checkpoint
  and checks it against the finetuning bar;
* ``exercises``, ``fences``, ``assignment``: ``tinyprune assignment``, which
  cuts a student copy; ``grade``, ``gradeplugin``: ``tinyprune grade``.
"""
