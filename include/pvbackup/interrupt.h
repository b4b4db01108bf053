/* Graceful interruption: SIGINT, SIGTERM and SIGHUP ask long operations to stop at the next
 * safe point (no snapshot is written, locks are released, exit code 130). A second signal
 * ends the process at once, which is still safe: nothing becomes visible half-written. */
#ifndef PVBACKUP_INTERRUPT_H
#define PVBACKUP_INTERRUPT_H

#include "pvbackup/common.h"

/* Install the handlers (the CLI does this once, before running a command). */
void pvb_interrupt_install(void);
/* True once a stop was requested. Async-signal-safe flag, cheap to poll. */
bool pvb_interrupted(void);
/* Request a stop from code (tests). */
void pvb_interrupt_request(void);

#endif
