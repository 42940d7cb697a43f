[ -n "$BASH" ] && [ -r ~/.bashrc ] && . ~/.bashrc
