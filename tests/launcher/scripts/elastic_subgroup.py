"""``membership_changed(group)`` on a subgroup without global rank 0 (ranks 1 and 2 of 3).

Rank 0 writes a membership record of a later generation than this one's (so a restart is
wanted), then every rank prints what ``membership_changed`` says for the world and for the
subgroup (``None`` on rank 0, which is not in it).
"""

import ringrt as dist
from ringrt import elastic

dist.init_process_group()
subgroup = dist.new_group([1, 2])
if dist.get_rank() == 0:
    later = elastic.RoundState(gen=elastic.generation() + 1, min_nodes=1, max_nodes=1)
    dist.get_store().set(elastic.STATE_KEY, later.encode())
dist.barrier()
world = elastic.membership_changed()
sub = elastic.membership_changed(subgroup) if dist.get_rank() != 0 else None
print(f"rank {dist.get_rank()}: world {world} subgroup {sub}", flush=True)
dist.destroy_process_group()
