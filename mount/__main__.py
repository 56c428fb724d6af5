import sys

from casfs.mount.daemon import main

sys.exit(main())
