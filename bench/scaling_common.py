"""What the scaling scripts (scaling.sh, cluster_scaling.sh) share: the names
of the step's stages and exchanges in `embtrain bench --json`, and the
efficiency E.

E charges a run of P ranks for nothing but the work it must do and the
wire: the work is the local engine's step time T(1) (one process, no
exchange) times the work a rank of this machine's cores does, and the wire
is what a plain all-to-all of the same bytes per peer costs on the same
communicator (raw(P), measured by bench in the same run):

    E(P) = (work * T(1) + raw(P)) / T(P)

where work = P for weak scaling on one machine (every rank brings its own
batch, and all ranks share the same cores) and 1 for strong scaling (one
global batch). 1 means the step pays for nothing but that; the exchanges'
skew/transfer/raw columns say where the rest went.
"""

STAGES = ("bucket_by_owner", "exchange_ids", "gather_owned", "exchange_rows", "expand",
          "reduce_requested", "exchange_grads", "combine_at_owner", "update")
EXCHANGES = ("exchange_ids", "exchange_rows", "exchange_grads")


def efficiency(work, t1_ms, raw_ms, step_ms):
    """E = (work * T(1) + raw(P)) / T(P), as above."""
    return (work * t1_ms + raw_ms) / step_ms
