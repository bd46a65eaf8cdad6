"""MobileNet v1's configuration table, written out for the tests that check the library against it.

It restates ``tinyprune.model.MOBILENET_CONFIG`` on purpose: a test that read
the library's own table could not notice a mistake in it.  The rows are those
of Metalhead's ``MobileNetv1``, the model the course builds:
(depthwise separable?, output channels at width 1, stride, repeats).
"""

CONFIG = (
    (False, 32, 2, 1),
    (True, 64, 1, 1),
    (True, 128, 2, 1),
    (True, 128, 1, 1),
    (True, 256, 2, 1),
    (True, 256, 1, 1),
    (True, 512, 2, 1),
    (True, 512, 1, 5),
    (True, 1024, 2, 1),
    (True, 1024, 1, 1),
)
