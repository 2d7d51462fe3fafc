import sys

from streamd.forkserver.server import main

sys.exit(main())
