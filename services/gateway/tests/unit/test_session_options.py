"""How the gateway configures onnxruntime sessions."""

from flywheel_gateway.models import RuntimeOptions, session_options

SPINNING_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def test_idle_onnxruntime_threads_sleep_unless_told_to_spin() -> None:
    # A spinning thread would take the core the event loop needs between runs.
    quiet = session_options(RuntimeOptions())
    assert [quiet.get_session_config_entry(key) for key in SPINNING_KEYS] == ["0", "0"]
    spinning = session_options(RuntimeOptions(thread_spinning=True))
    assert [spinning.get_session_config_entry(key) for key in SPINNING_KEYS] == ["1", "1"]


def test_thread_counts_reach_the_session() -> None:
    options = session_options(RuntimeOptions(intra_op_threads=3, inter_op_threads=2))
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 2)
