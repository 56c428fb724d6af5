import sys

from casfs.tools.cli import main

sys.exit(main())
