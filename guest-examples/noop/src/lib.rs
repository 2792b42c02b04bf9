//! The smallest action: answers at once, touching nothing (and undoes that). What a call
//! costs when the plugin itself costs nothing (the benches' baseline).

use vigil_sdk::{Action, ActionContext, Error, Outcome};

struct Noop;

impl Action for Noop {
    fn execute(ctx: ActionContext) -> Result<Outcome, Error> {
        Ok(Outcome::new(ctx.step_id, "nothing done"))
    }

    fn rollback(_ctx: ActionContext, done: Outcome) -> Option<Result<Outcome, Error>> {
        Some(Ok(Outcome { detail: format!("undid: {}", done.detail), ..done }))
    }
}

vigil_sdk::register_plugin!(action: Noop);
