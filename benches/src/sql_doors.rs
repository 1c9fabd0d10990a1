//! Q1–Q8 through the SQL doors a client library uses, beside `/v1/query`
//! answering Arrow (the fastest HTTP answer): Arrow Flight SQL (as ADBC
//! asks) and the Postgres wire protocol (extended protocol, binary rows,
//! as tokio-postgres, JDBC and pgx ask). Each client reads the whole
//! answer; the doors take turns within each run, so that a noisy machine
//! slows them alike.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow::ipc::reader::StreamReader;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use serde_json::{Value, json};

/// One query's medians (ms) per door.
pub struct DoorTimes {
    pub tag: String,
    pub http_arrow: f64,
    pub flight_sql: f64,
    pub pgwire: f64,
}

pub async fn time_doors(
    http: &str,
    flight_sql: &str,
    pg: &str,
    queries: &[(String, String)],
    runs: usize,
) -> Result<Vec<DoorTimes>> {
    let web = reqwest::Client::new();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{flight_sql}"))?
        .connect()
        .await
        .context("connecting to Flight SQL")?;
    let mut flight = FlightSqlServiceClient::new(channel);
    let (host, port) = pg.rsplit_once(':').context("a host:port")?;
    let (pg, connection) = tokio_postgres::connect(
        &format!("host={host} port={port} user=bench dbname=atoll"),
        tokio_postgres::NoTls,
    )
    .await
    .context("connecting to the Postgres door")?;
    tokio::spawn(connection);
    let mut out = Vec::new();
    for (tag, sql) in queries {
        let (mut a, mut f, mut p) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..=runs {
            let (ra, ta) = timed(http_arrow(&web, http, sql)).await?;
            let (rf, tf) = timed(flight_sql_rows(&mut flight, sql)).await?;
            let (rp, tp) = timed(async { Ok(pg.query(sql.as_str(), &[]).await?.len()) }).await?;
            if ra != rf || ra != rp {
                bail!("{tag}: {ra} rows over HTTP, {rf} over Flight SQL, {rp} over pgwire");
            }
            if run > 0 {
                a.push(ta);
                f.push(tf);
                p.push(tp);
            }
        }
        out.push(DoorTimes {
            tag: tag.clone(),
            http_arrow: median(&mut a),
            flight_sql: median(&mut f),
            pgwire: median(&mut p),
        });
    }
    Ok(out)
}

async fn timed(f: impl Future<Output = Result<usize>>) -> Result<(usize, f64)> {
    let t = Instant::now();
    let rows = f.await?;
    Ok((rows, t.elapsed().as_secs_f64() * 1e3))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn http_arrow(client: &reqwest::Client, url: &str, sql: &str) -> Result<usize> {
    let res = client
        .post(format!("{url}/v1/query"))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&json!({"sql": sql}))
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("{sql}: {}", res.text().await?);
    }
    let bytes = res.bytes().await?;
    let mut rows = 0;
    for batch in StreamReader::try_new(std::io::Cursor::new(bytes), None)? {
        rows += batch?.num_rows();
    }
    Ok(rows)
}

async fn flight_sql_rows(
    client: &mut FlightSqlServiceClient<tonic::transport::Channel>,
    sql: &str,
) -> Result<usize> {
    let info = client.execute(sql.to_string(), None).await?;
    let mut rows = 0;
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.context("an endpoint without a ticket")?;
        let batches: Vec<_> = client.do_get(ticket).await?.try_collect().await?;
        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    Ok(rows)
}

/// The report's part, and its table (ratios to HTTP Arrow).
pub fn report(times: &[DoorTimes]) -> Value {
    println!(
        "\nSQL doors, 1 node (medians; ratio to /v1/query answering Arrow):\n\n| query | HTTP Arrow ms | Flight SQL ms | ratio | pgwire ms | ratio |\n| --- | --- | --- | --- | --- | --- |"
    );
    for t in times {
        println!(
            "| {} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.2}x |",
            t.tag,
            t.http_arrow,
            t.flight_sql,
            t.flight_sql / t.http_arrow,
            t.pgwire,
            t.pgwire / t.http_arrow
        );
    }
    json!(
        times
            .iter()
            .map(|t| json!({"query": t.tag, "http_arrow_ms": t.http_arrow, "flight_sql_ms": t.flight_sql, "pgwire_ms": t.pgwire}))
            .collect::<Vec<_>>()
    )
}
