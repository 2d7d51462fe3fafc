import sys

from streamd.worker.main import main

sys.exit(main())
