"""The programs around the library, out of the textbook's path.

* ``cli``: the ``tinyprune`` command (the tutorial's pipeline, ``count``,
  ``prune``, and the two tools below as subcommands);
* ``bench``: ``tinyprune bench``, the speed and memory benchmark;
* ``pretrain``: ``tinyprune pretrain``, which trains the shipped checkpoint
  and checks it against the finetuning bar.
"""
