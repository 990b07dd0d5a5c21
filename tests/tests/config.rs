//! `fleetprompt.toml`: a server started from nothing but a configuration
//! file listens where the file says and uses the file's database.

use std::process::Stdio;
use std::time::{Duration, Instant};

use fleetprompt_system_tests::{
    Backend, MASTER_KEY, TestDb, binary, both_backends, create_tenant, http_client,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

both_backends!(serve_starts_from_the_files_bind_and_database_url);

async fn serve_starts_from_the_files_bind_and_database_url(backend: Backend) {
    let db = TestDb::new(backend).await.unwrap();
    // The tenant exists only in the test's database: the server can answer
    // for its token only if it opened the database the file names.
    let tenant = create_tenant(&db, "acme").await.unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file = db.dir.join("fleetprompt.toml");
    let data = db.dir.join("data-from-file");
    std::fs::write(
        &file,
        format!(
            "bind = \"127.0.0.1:{port}\"\n\
             database_url = {url:?}\n\
             data_dir = {data:?}\n\
             master_key = \"{MASTER_KEY}\"\n\
             demo = false\n\
             workflows = {wf:?}\n",
            url = db.url,
            data = data.display().to_string(),
            wf = db.dir.join("no-workflows").display().to_string(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(db.dir.join("serve.log")).unwrap();
    let mut cmd = Command::new(binary());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("FLEETPROMPT_") || k == "DATABASE_URL" {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .current_dir(&db.dir)
        .arg("--config")
        .arg(&file)
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("serve printed its address")
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "serve exited:\n{}",
                std::fs::read_to_string(db.dir.join("serve.log")).unwrap_or_default()
            )
        });
    let url = format!("http://127.0.0.1:{port}");
    assert_eq!(line, format!("FleetPrompt listening on {url}"));

    let http = http_client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{url}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http
        .get(format!("{url}/admin/v1/edge-connectors"))
        .bearer_auth(&tenant.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    // SQLite or not, nothing went to the default database in the file's
    // data directory: the file's URL was used.
    assert!(!data.join("fleetprompt.db").exists());
    let _ = child.start_kill();
}
