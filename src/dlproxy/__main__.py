from dlproxy.cli import main

raise SystemExit(main())
