#!/usr/bin/env bash
# Print the path of a working Python 3.10 interpreter, or fail with a clear message.
# safety-gymnasium 1.0.0 cannot be imported on 3.11+, so 3.10 is required.
set -u
candidates=("${PYTHON310:-}" python3.10 "$HOME"/.pyenv/versions/3.10*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10)
for py in "${candidates[@]}"; do
  [ -n "$py" ] || continue
  if "$py" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
    command -v "$py" 2>/dev/null || echo "$py"
    exit 0
  fi
done
echo "error: Python 3.10 not found (safety-gymnasium 1.0.0 needs it); set PYTHON310=/path/to/python3.10" >&2
exit 1
