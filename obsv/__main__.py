from obsv.cli import main

raise SystemExit(main())
