//! The controller killed (SIGKILL, its whole process group) at random points of ten
//! iterations: each iteration still converges to one image equal to the source, and
//! nothing is leaked.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    env::{SERIAL, env},
    lifecycle_support::{
        Rng, assert_image_equals, create_rs, destination_at_rest, expect, manual_synced, mutate,
        new_image, sample_volume, seed, settles_to, snapshot_pair, source_spec, trigger_manual,
    },
};

#[tokio::test]
async fn the_controller_killed_at_random_points_during_ten_iterations() {
    let _one_at_a_time = SERIAL.lock().await;
    let started = Instant::now();
    let env = env();
    let mut controller = env.controller(&[]);
    let (dst, src, address) = snapshot_pair("lc-kill", "killed", 1, json!({})).await;
    let data = sample_volume(&src, "data").await;
    create_rs(
        &src,
        "killed",
        source_spec(
            "killed",
            "data",
            &address,
            json!({"manual": "0"}),
            json!({"copyMethod": "Clone"}),
        ),
    )
    .await;
    manual_synced(&src, "killed", "0").await;
    let mut image = new_image(&dst, "killed", None).await;
    let mut rng = Rng(seed("controller kills"));
    for round in 1..=10 {
        let done = mutate(&data, &mut rng, round);
        let value = round.to_string();
        trigger_manual(&src, "killed", &value).await;
        // Kill it somewhere in the iteration: before the clone, while the movers run,
        // around publication or the cleanup; twice in some rounds.
        for _ in 0..(1 + rng.below(2)) {
            let at = Duration::from_millis(rng.below(6000) as u64);
            tokio::time::sleep(at).await;
            drop(controller);
            eprintln!("round {round}: killed the controller after {at:?}");
            controller = env.controller(&[]);
        }
        manual_synced(&src, "killed", &value).await;
        image = new_image(&dst, "killed", Some(&image)).await;
        eprintln!("round {round}: {done:?}");
        assert_image_equals(&dst, &image, &format!("restore-{round}"), &data).await;
    }
    settles_to(&src, &expect(&["data"], &[], &[], &[])).await;
    destination_at_rest(&dst, "killed", &[&image], &[]).await;
    drop(controller);
    eprintln!("controller kills: {:.1}s", started.elapsed().as_secs_f64());
}
