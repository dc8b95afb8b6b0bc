# Sourced by the .ci scripts that test a second build of hashsearch._core (emulated
# AVX-512, sanitizers). enter_test_tree: installs the build requirements of
# pyproject.toml (the build runs outside pip's isolation), copies what the build and the
# tests need into a temporary directory removed on exit, without the installed extension,
# and changes into it ($work).
enter_test_tree() {
    python3 -m pip install -q "setuptools>=77" wheel "pybind11>=2.11"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    cp -r "$root/csrc" "$root/hashsearch" "$root/tests" "$root/setup.py" "$root/pyproject.toml" \
        "$root/README.md" "$root/LICENSE" "$work/"
    rm -f "$work"/hashsearch/_core*.so
    cd "$work"
}
