from vidd.cli import main

raise SystemExit(main())
