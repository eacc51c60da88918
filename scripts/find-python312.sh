#!/usr/bin/env sh
# Print a Python 3.12 interpreter (the Lambda runtime): python3.12 on PATH, else pyenv's.
for candidate in "$(command -v python3.12 2>/dev/null)" "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
        echo "$candidate"
        exit 0
    fi
done
if command -v pyenv >/dev/null 2>&1; then
    for version in $(pyenv versions --bare 2>/dev/null | grep '^3\.12'); do
        echo "$(pyenv root)/versions/$version/bin/python3.12"
        exit 0
    done
fi
echo "Python 3.12 not found: install it (e.g. 'pyenv install 3.12') or put python3.12 on PATH" >&2
exit 1
