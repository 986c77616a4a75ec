from system_info_collector.cli import main

raise SystemExit(main())
