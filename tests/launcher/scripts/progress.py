"""Draws a carriage-return progress bar, then prints a final line."""
import sys

for i in range(3):
    sys.stdout.write(f"\rprogress {i}")
    sys.stdout.flush()
sys.stdout.write("\rdone\n")
print("after")
