from gradlens.cli import main

raise SystemExit(main())
