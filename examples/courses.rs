//! Rules across streams, decided on consistency boundaries: twelve students
//! race for the four seats of a course, from twelve tasks at once, and
//! exactly four get in; one student tries more courses than allowed; two
//! users claim one username. The domain is `cqrs_examples::courses` (in
//! `src/courses.rs`).
//!
//! ```text
//! cargo run --example courses                             # SQLite file courses.sqlite
//! cargo run --example courses -- --postgres postgres://user@127.0.0.1/courses
//! ```
//!
//! Each run opens courses and names of its own, so runs can follow each
//! other on one database.

use cqrs_core::prelude::*;
use cqrs_core::{PostgresStore, SqliteStore, Uuid};
use cqrs_examples::courses::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let postgres = args
        .windows(2)
        .find(|pair| pair[0] == "--postgres")
        .map(|pair| pair[1].clone());
    let app = match postgres {
        Some(url) => Cqrs::builder(PostgresStore::connect(&url).await?),
        None => Cqrs::builder(SqliteStore::open("courses.sqlite").await?),
    }
    .host::<Courses>()
    .build()?;
    let run = Uuid::now_v7().simple().to_string()[..8].to_owned();

    let course = format!("rust-{run}");
    app.execute(
        &course,
        OpenCourse {
            title: "Rust".into(),
            capacity: 4,
        },
    )
    .await?;
    println!("course {course} opened with 4 seats; 12 students subscribe at once");
    let students: Vec<_> = (1..=12)
        .map(|n| {
            let (app, course) = (app.clone(), course.clone());
            tokio::spawn(async move {
                let student = format!("student-{n}");
                let outcome = app
                    .decide(Subscription::of(&course, &student), Subscribe)
                    .await;
                (student, outcome)
            })
        })
        .collect();
    for student in students {
        match student.await? {
            (student, Ok(committed)) => println!(
                "  {student} got a seat (position {}, after {} retries)",
                committed.last_position().unwrap_or_default(),
                committed.retries
            ),
            (student, Err(CommandError::Domain(error))) => println!("  {student}: {error}"),
            (_, Err(other)) => return Err(other.into()),
        }
    }

    println!("student-1 tries {} more courses", MAX_COURSES + 1);
    for n in 1..=MAX_COURSES + 1 {
        let other = format!("course-{n}-{run}");
        let open = OpenCourse {
            title: format!("course {n}"),
            capacity: 10,
        };
        app.execute(&other, open).await?;
        match app
            .decide(Subscription::of(&other, "student-1"), Subscribe)
            .await
        {
            Ok(_) => println!("  subscribed to {other}"),
            Err(CommandError::Domain(error)) => println!("  {other}: {error}"),
            Err(other) => return Err(other.into()),
        }
    }

    let name = format!("ada-{run}");
    for user in ["user-1", "user-2"] {
        let claim = ClaimUsername {
            user_id: user.into(),
        };
        match app.decide(Username::of(&name), claim).await {
            Ok(_) => println!("{user} claimed the username {name}"),
            Err(CommandError::Domain(error)) => println!("{user}: {error}"),
            Err(other) => return Err(other.into()),
        }
    }
    Ok(())
}
