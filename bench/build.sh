# Sourced by bench/*.sh from the repository root: build the release binary into build-release/
# (no tests, no sanitizers) unless WALGATE_BIN already names a walgate binary.
if [ -z "${WALGATE_BIN:-}" ]; then
  cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DWALGATE_TESTS=OFF >/dev/null
  cmake --build build-release -j"$(nproc)" >/dev/null
  export WALGATE_BIN=$PWD/build-release/walgate
fi
