#!/bin/sh
# Two hosts simulated on one machine (tests/test-mpi-hosts.c): the helper
# mpirun calls in place of ssh, and the wrapper each rank runs through.
#
#   hosts-agent.sh HOST CMD...    mpirun's launch agent (--mca plm_rsh_agent):
#       Open MPI 4.1 calls it as ssh, with the host then the orted command
#       line as words that a remote shell joins and parses (quotes included),
#       so CMD runs under `sh -c "$*"`.  HOST is looked up in
#       $HOSTS_AGENT_NETNS ("ADDR=NETNS ADDR=NETNS ..."), and CMD runs in
#       that network namespace, under a hostname of its own (the namespace's
#       name, in a UTS namespace of its own) and with a /dev/shm of its own,
#       as on a real second host: Open MPI names its shared-memory segments
#       by hostname and local rank, so two "hosts" sharing both crash rank 0
#       in the vader transport (seen here: SIGSEGV in
#       mca_btl_vader_poll_handle_frag during MPI_Init's allreduce).
#   hosts-agent.sh --rank PROG ARGS...
#       prints "hosts-agent: rank R netns net:[INODE] host NAME" (the network
#       namespace this process runs in) and execs PROG, so the line describes
#       the rank's own process.
set -u
if [ "${1:-}" = "--rank" ]; then
    shift
    echo "hosts-agent: rank ${OMPI_COMM_WORLD_RANK:-?} netns $(readlink /proc/self/ns/net) host $(uname -n)"
    exec "$@"
fi
if [ $# -lt 2 ]; then
    echo "usage: hosts-agent.sh HOST CMD... | hosts-agent.sh --rank PROG ARGS..." >&2
    exit 2
fi
host=$1
shift
ns=""
for pair in ${HOSTS_AGENT_NETNS:-}; do
    [ "${pair%%=*}" = "$host" ] && ns=${pair#*=}
done
if [ -z "$ns" ]; then
    echo "hosts-agent.sh: host '$host' is not in HOSTS_AGENT_NETNS='${HOSTS_AGENT_NETNS:-}'" >&2
    exit 2
fi
# ip netns exec gives the command a mount namespace of its own (to remount
# /sys), so the tmpfs on /dev/shm is seen by this host's processes only and
# goes away with the last of them.  The inner script's $0 and $1 are its own
# arguments (the namespace, the command), expanded there, not here.
# shellcheck disable=SC2016
exec ip netns exec "$ns" unshare --uts sh -c \
    'hostname "$0" && mount -t tmpfs -o mode=1777 hostshm /dev/shm && eval "$1"' "$ns" "$*"
