from rls3_ros.cli.main import main

raise SystemExit(main())
