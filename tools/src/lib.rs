//! Shared code of the veto-loadgen and veto-bench tools.
