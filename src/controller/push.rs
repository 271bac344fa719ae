//! What happens to a push, decided before any ref moves (pre-receive). Returns the exit code
//! that accepts (0) or rejects (non-zero) the whole push.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Core, PendingPush};
use crate::git::hookproto::{is_zero, Frame, HookRequest};

pub async fn run(
    core: Arc<Core>,
    push: PendingPush,
    req: HookRequest,
    out: mpsc::Sender<Frame>,
) -> i32 {
    let say = |s: String| {
        let out = out.clone();
        async move {
            let _ = out.send(Frame::out(s)).await;
        }
    };
    let who = &push.identity;
    let refs: Vec<String> = req.updates.iter().map(|u| u.name.clone()).collect();
    let detail = refs.join(" ");
    for u in &req.updates {
        if let Err(why) = push.grant.may_push_ref(&u.name) {
            say(format!("error: key '{}': {why}", who.name)).await;
            let _ = core
                .store
                .record_push(&push.app, who, &req.updates, "refused");
            core.audit(
                who,
                Some(&push.app),
                "git push",
                "denied",
                &format!("{detail}: {why}"),
            );
            return 1;
        }
    }
    for u in &req.updates {
        let short = u
            .name
            .strip_prefix("refs/heads/")
            .or_else(|| u.name.strip_prefix("refs/tags/"))
            .unwrap_or(&u.name);
        if is_zero(&u.new) {
            say(format!("-----> {}: deleted {short}", push.app)).await;
        } else {
            say(format!(
                "-----> {}: received {short} {}",
                push.app,
                &u.new[..7]
            ))
            .await;
        }
    }
    match core
        .store
        .record_push(&push.app, who, &req.updates, "accepted")
    {
        Ok(_) => {
            core.audit(who, Some(&push.app), "git push", "ok", &detail);
            0
        }
        Err(e) => {
            say(format!("error: cannot record the push ({e})")).await;
            1
        }
    }
}
