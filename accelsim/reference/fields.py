"""The integer fields every reference result carries."""

#: the compute fields: MAC counts, folds and compute cycles (what the reference
#: reported before the memory model; kept under this name for existing callers)
FIELDS = (
    "macs_dense",
    "macs_performed",
    "macs_gated",
    "macs_skipped",
    "macs_padding",
    "folds",
    "compute_cycles",
)

#: traffic and timing fields (bytes; ``_meta_`` = metadata, the rest data)
MEMORY_FIELDS = (
    "dram_a_read_bytes",
    "dram_a_read_meta_bytes",
    "dram_w_read_bytes",
    "dram_w_read_meta_bytes",
    "dram_psum_read_bytes",
    "dram_psum_write_bytes",
    "dram_out_write_bytes",
    "dram_out_write_meta_bytes",
    "glb_a_write_bytes",
    "glb_a_write_meta_bytes",
    "glb_w_write_bytes",
    "glb_w_write_meta_bytes",
    "glb_a_read_bytes",
    "glb_a_read_meta_bytes",
    "glb_w_read_bytes",
    "glb_w_read_meta_bytes",
    "glb_psum_read_bytes",
    "glb_psum_write_bytes",
    "glb_out_write_bytes",
    "glb_out_write_meta_bytes",
    "rf_a_read_bytes",
    "rf_w_read_bytes",
    "rf_a_write_bytes",
    "rf_w_write_bytes",
    "rf_out_read_bytes",
    "rf_out_write_bytes",
    "compute_cycles",
    "stall_cycles",
    "cycles",
)

#: temporal delta state traffic (bytes), placement (0/1) and cycles
STATE_FIELDS = (
    "state_ref_read_bytes",
    "state_ref_write_bytes",
    "state_acc_read_bytes",
    "state_acc_write_bytes",
    "state_enc_read_bytes",
    "state_in_dram",
    "state_cycles",
    "state_stall_cycles",
)

#: the delta and N:M fields (0 where the feature does not apply); macs_wide_*: the
#: performed and gated MACs whose A operand is a_bits + 1 wide (delta layers)
DELTA_NM_FIELDS = STATE_FIELDS + ("nm_mux_ops", "macs_wide_performed", "macs_wide_gated")

#: the cost of skipping (scan / decode operations, per-PE metadata reads) and operand
#: bytes forwarded from PE to PE (docs/energy.md)
SKIP_HOP_FIELDS = (
    "skip_scan_ops",
    "skip_decode_ops",
    "rf_a_meta_read_bits",
    "rf_w_meta_read_bits",
    "pe_hop_a_bytes",
    "pe_hop_w_bytes",
    "pe_hop_psum_bytes",
)

#: bytes through the PE-local buffers of decoupled PEs and drifting ws/is rows
PE_BUF_FIELDS = (
    "pe_buf_read_bytes",
    "pe_buf_write_bytes",
    "acc_buf_read_bytes",
    "acc_buf_write_bytes",
)

#: the integer fields every result carries
ALL_FIELDS = (FIELDS + tuple(k for k in MEMORY_FIELDS if k not in FIELDS)
              + DELTA_NM_FIELDS + SKIP_HOP_FIELDS + PE_BUF_FIELDS)
