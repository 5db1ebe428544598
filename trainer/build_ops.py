"""``python -m trainer.build_ops``: compile DeepSpeed's CPU comm op into this Python environment's extensions
folder now (about a minute, once per environment) rather than at the first trainer's start; says so when it
builds, nothing when the op is built already."""
from trainer.deepspeed_engine import import_deepspeed, load_shm_comm_op

if __name__ == "__main__":
    load_shm_comm_op(import_deepspeed(), print)
