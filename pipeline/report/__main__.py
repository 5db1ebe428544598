import sys

from pipeline.report import main

sys.exit(main())
