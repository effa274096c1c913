"""What the Python test scripts share: a counted check() that reports each failure as it
happens, and the summary line and exit status at the end.

    from checks import Checks
    check = Checks("tar_index.py")
    check(ok, "what was checked")
    sys.exit(check.summary())      # 0 when every check passed, 1 otherwise
"""
import sys


class Checks:
    def __init__(self, name):
        self.name, self.failures, self.count = name, [], 0

    def __call__(self, ok, what):
        self.count += 1
        if not ok:
            self.failures.append(what)
            print(f"{self.name}: FAILED: {what}", file=sys.stderr)

    def summary(self):
        """Prints how many passed or failed; the exit status: 0 or 1."""
        if self.failures:
            print(f"{self.name}: {len(self.failures)} of {self.count} checks failed", file=sys.stderr)
            return 1
        print(f"{self.name}: all {self.count} checks passed")
        return 0
