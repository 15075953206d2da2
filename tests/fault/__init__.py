"""The fault and abuse suite: black-box tests against real ``tokentrail serve`` subprocesses (kills, WAL damage, a
full disk, abusive clients, overload, a crowd on the report API), each holding the receiver to what it acknowledged
being stored exactly once, bounded threads and memory, and answering throughout. ``TOKENTRAIL_SOAK=1`` runs it
longer (``make soak``)."""
