"""``python -m snowtrain.probe --config FILE``."""

import sys

from .run import main

sys.exit(main())
