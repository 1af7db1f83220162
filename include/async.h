/* libasync: asynchronous I/O and parallel work for C.  Include this one
 * header to get every module. */
#ifndef ASYNC_H
#define ASYNC_H

#include "async/common.h"
#include "async/loop.h"
#include "async/task.h"
#include "async/sync.h"
#include "async/future.h"
#include "async/executor.h"
#include "async/progress.h"
#include "async/http.h"
#include "async/ipc.h"
#include "async/process.h"
#include "async/net.h"
#include "async/select.h"

#endif
