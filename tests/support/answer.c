#include "answer.h"

void test_answer_catch(async_http_response_t *resp, void *arg)
{
    test_answer_t *a = arg;
    a->calls++;
    if (a->resp) async_http_response_free(a->resp);
    a->resp = resp;
}
