from shared.cli import suite_main

if __name__ == "__main__":
    raise SystemExit(suite_main("pytorch_impl"))
