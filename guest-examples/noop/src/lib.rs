//! The smallest action: answers at once, touching nothing. What a call costs when the
//! plugin itself costs nothing (the benches' baseline).

use vigil_sdk::{Action, ActionContext, Error, Outcome};

struct Noop;

impl Action for Noop {
    fn execute(ctx: ActionContext) -> Result<Outcome, Error> {
        Ok(Outcome::new(ctx.step_id, "nothing done"))
    }
}

vigil_sdk::register_plugin!(action: Noop);
