/* The hook between channels (sync.c) and select (select.c).  PRIVATE. */
#ifndef ASYNC_SELECT_INTERNAL_H
#define ASYNC_SELECT_INTERNAL_H

#include "async/sync.h"

/* Called by sync.c whenever a channel's state changes in a way that may let a
 * waiting select complete: an element buffered or taken, a task starting to
 * wait to send or receive, a close.  Wakes the selects of this thread that
 * watch chan; costs one thread-local load when none waits. */
void async__chan_changed(async_chan_t *chan);

/* True while a select of this thread waits on chan: from its park until it
 * returns, woken or not (sync.c's destroy is then ASYNC_EBUSY). */
bool async__chan_watched(const async_chan_t *chan);

/* 0, or ASYNC_EWRONGLOOP when the caller may not use chan (sync.c's rule:
 * the channel's loop's thread only); binds an unbound channel. */
int async__chan_own(async_chan_t *chan);

#endif
