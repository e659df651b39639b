//! Running: the content-addressed cache, the scheduler, progress, the event log, watch.
