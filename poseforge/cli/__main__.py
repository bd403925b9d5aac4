"""``python -m poseforge.cli``: the ``poseforge`` command (as torchrun runs it)."""
import sys

from . import main

sys.exit(main())
