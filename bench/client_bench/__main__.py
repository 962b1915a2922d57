from bench.client_bench.cli import main

raise SystemExit(main())
