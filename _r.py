from bench.suite import load_suite, resolve_cells
s = load_suite("cifar10")
for f in ["smoke","quick","paper"]:
    try:
        print(f, len(resolve_cells(s, f)))
    except Exception as e: print(f, "ERR", e)
