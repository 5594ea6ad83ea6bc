#!/usr/bin/env python3
"""Parse kickstarts with pykickstart (the given handler version, e.g. RHEL10) and run
`bash -n` on every %pre/%post script body, which ksvalidator does not check.

usage: ks_post_bash_n.py VERSION FILE.ks...   exit status 1 if any script fails to parse."""
import subprocess
import sys

from pykickstart.parser import KickstartParser
from pykickstart.version import makeVersion

version, paths = sys.argv[1], sys.argv[2:]
rc = 0
for path in paths:
    parser = KickstartParser(makeVersion(version))
    parser.readKickstart(path)
    if not parser.handler.scripts:
        print(f"{path}: no %pre/%post scripts")
        rc = 1
    for s in parser.handler.scripts:
        r = subprocess.run(["bash", "-n"], input=s.script, text=True, capture_output=True)
        print(f"{path}: script type={s.type} lineno={s.lineno} interp={s.interp} "
              f"chroot={s.inChroot} errorOnFail={s.errorOnFail} bash-n rc={r.returncode} {r.stderr.strip()}")
        rc |= r.returncode
sys.exit(1 if rc else 0)
