use cqrs_core::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CourseOpened {
    pub course_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Event)]
pub enum CourseEvent {
    #[event(tags(course))]
    Opened(CourseOpened),
}

#[derive(Debug, Clone)]
pub struct OpenCourse;

#[derive(Debug, thiserror::Error)]
#[error("closed")]
pub struct Closed;

#[derive(Debug, Clone, Default, DecisionModel)]
#[decision(name = "course", command = OpenCourse, event = CourseEvent, error = Closed)]
pub struct Course {
    #[tag]
    course: String,
}

#[decision_impl]
impl Course {
    #[command_handler]
    fn open(&self, _: OpenCourse) -> Result<(), Closed> {
        Ok(())
    }

    #[apply]
    fn opened(&mut self, _: &CourseOpened) {}
}

fn main() {}
