import sys

from pipeline.plan.cli import main

if __name__ == "__main__":
    sys.exit(main())
