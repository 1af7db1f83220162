/* async_process_run_commands_dl's output capture: a buffer that cannot be
 * allocated while the command runs is reported in its result, not lost. */
#include <criterion/criterion.h>
#include "support/alloc.h"
#include <async.h>

/* The first buffer for a command's output cannot be allocated while the
 * command still runs: its result must say ASYNC_ENOMEM (its output is lost),
 * not report a clean run with empty output. */
Test(commands, command_capture_failure_is_reported, .timeout = 10)
{
    test_alloc_install();
    const char *const argv[] = {"sh", "-c", "echo hi; sleep 0.3", NULL};
    async_command_t cmd = {argv, NULL};
    async_command_result_t r;
    test_alloc_fail_after(2); /* the run's two arrays, then the first buffer */
    int rc = async_process_run_commands_dl(&cmd, 1, 1, &r, ASYNC_FOREVER);
    cr_assert_eq(r.error, ASYNC_ENOMEM, "got %s", async_errname(r.error));
    cr_assert_eq(rc, ASYNC_ECHILD);
    cr_assert_eq(r.exit_code, 0, "it still ran to its end");
    async_command_result_clear(&r);
    cr_assert_eq(test_alloc_live(), 0);
    test_alloc_uninstall();
}
