/* session_api.c — the public mf_session_create: with no memory budget the
 * session reads weights from the file mapping; with one, the planner decides
 * what stays resident and what streams, and the session gets the streaming
 * provider and a ledger whose hard limit is what the plan allows. */
#include "plan/plan.h"

mf_status mf_session_create(mf_model *m, const mf_session_params *p, mf_session **out) {
    *out = NULL;
    mf_session_params def = {0};
    if (!p) p = &def;
    if (!p->mem_budget) {
        mf_provider prov;
        TRY(mf_provider_mapped(m, true, &prov));
        return mf_session_new(m, p, &prov, NULL, out);
    }
    return mf_plan_session(m, p, out);
}
