"""``python -m snowtrain.bridge --config FILE``."""

import sys

from .loop import main

sys.exit(main())
