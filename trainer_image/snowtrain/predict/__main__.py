"""``python -m snowtrain.predict --config FILE``."""

import sys

from .run import main

sys.exit(main())
