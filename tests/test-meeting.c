/* The meeting demo: both versions run every step, the concurrent one takes
 * about the longest job, the serial one the sum (lower bounds only). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

Test(meeting, serial_and_concurrent, .timeout = 30)
{
    FILE *p = popen(ASYNC_OUT_DIR "/demos/meeting/meeting --scale 0.01", "r");
    cr_assert_not_null(p);
    char line[256];
    int updates = 0, coffees = 0;
    double serial = -1, concurrent = -1;
    while (fgets(line, sizeof line, p)) {
        updates += strstr(line, "stand-up update") != NULL;
        coffees += strstr(line, "coffee") != NULL;
        sscanf(line, "serial: %lf", &serial);
        sscanf(line, "concurrent: %lf", &concurrent);
    }
    cr_assert_eq(pclose(p), 0);
    cr_assert_eq(updates, 8, "4 updates in each version");
    cr_assert_eq(coffees, 2);
    cr_assert_geq(serial, 0.185, "the serial version waits out every delay");
    cr_assert_geq(concurrent, 0.100, "the concurrent one the longest job");
    cr_assert_lt(concurrent, serial, "waiting concurrently overlaps the delays");
}

Test(meeting, bad_scale_is_an_error, .timeout = 10)
{
    FILE *p = popen(ASYNC_OUT_DIR "/demos/meeting/meeting --scale -1 2>&1", "r");
    char line[256] = "";
    cr_assert_not_null(fgets(line, sizeof line, p));
    cr_assert(strstr(line, "--scale wants a positive number"), "got: %s", line);
    cr_assert_eq(WEXITSTATUS(pclose(p)), 2);
}
