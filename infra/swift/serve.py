"""Runs one Swift server (`serve.py SWIFT_DIR /usr/bin/swift-<name>-server CONF [-v]`) with
swift.conf read from SWIFT_DIR instead of /etc/swift.

Swift reads /etc/swift/swift.conf (hash path salts, storage policies, constraints) when its
modules load, and Debian's server scripts have no option to look elsewhere: pointing the
modules at the state dir before the server script runs keeps each instance self-contained.
"""

import runpy
import sys

from swift.common import constraints, storage_policy, utils

swift_dir, server, *arguments = sys.argv[1:]
utils.set_swift_dir(swift_dir)
storage_policy.reload_storage_policies()
constraints.reload_constraints()
sys.argv = [server, *arguments]
runpy.run_path(server, run_name="__main__")
